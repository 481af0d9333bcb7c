"""gradbench.reports"""
