"""Images in and out: folders of files, transforms, and the procedural generator."""

from .folder import IMAGE_EXTENSIONS, ImageFolder, collate_skip, decode_bytes, list_images, load_image, save_image, scan
from .generate import STYLE_FAMILIES, generate_folder, generate_image, style_family
from .transforms import ResizeCrop, center_crop, random_crop, resize_crop, resize_shorter

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolder",
    "collate_skip",
    "decode_bytes",
    "list_images",
    "load_image",
    "save_image",
    "scan",
    "STYLE_FAMILIES",
    "generate_folder",
    "generate_image",
    "style_family",
    "ResizeCrop",
    "center_crop",
    "random_crop",
    "resize_crop",
    "resize_shorter",
]
