"""ListOps task: prefix expressions over digits with MIN, MAX, MED and SM operators."""
