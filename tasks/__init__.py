"""gradbench.tasks"""
