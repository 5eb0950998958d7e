"""Built-in stylizer plugins, one module each, registered through the ``nstzoo`` entry-point group."""
