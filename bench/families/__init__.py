"""Distribution families as estimators see them: parameters with a leading estimate axis.

Modules: categorical (the Distribution interface, the Objective, Categorical and Bernoulli),
counts (Poisson, binomial, negative-binomial, geometric with their truncated categorical
views), sequence (decision sequences, seen by categorical estimators one decision at a time).
"""
