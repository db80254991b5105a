"""The data set: labels, the manifest and class split, the image stores, synthetic sets, the demo data set."""
