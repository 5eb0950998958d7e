"""Training: the SupCon loss, logit accumulation, the ALADIN-NST trainer, and stylizer training."""
