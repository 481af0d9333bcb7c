"""gradbench.estimators"""
