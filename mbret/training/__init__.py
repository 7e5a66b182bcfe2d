"""Training (data formats, mining, teacher scoring, losses, recipes): arrives with the training issue."""
