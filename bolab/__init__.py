"""bolab: command line and Python client of the benign-overfitting lab service."""
