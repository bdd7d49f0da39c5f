"""Download, verify and lay out the public pathology datasets that ssmamba_lite reads."""
