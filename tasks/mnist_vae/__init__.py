"""gradbench.tasks.mnist_vae: the MNIST variational autoencoder task.

The data module :mod:`gradbench.tasks.mnist_vae.data` loads the images; see
``DATA.md`` in this folder for where the embedded subset comes from and how it
is split.
"""
