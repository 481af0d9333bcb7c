"""The registered tasks ``mnist-vae`` (categorical latents) and ``mnist-vae-binary`` (Bernoulli latents).

Both train a VAE on MNIST with the estimator under test (see ``train.py``), log
training curves per epoch and measure the estimator's gradient bias and variance at
frozen parameters every ``measure_every`` epochs (see ``problem.py``).

Parameters a preset may set default to None and are filled in ``__post_init__``:
an explicit value, else the preset's, else the task's CPU default. Data paths,
checkpoint files and the measurement batch are checked there too, so a bad spec
fails before anything is computed or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from gradbench.errors import SpecError
from gradbench.params import param
from gradbench.registry import tasks
from gradbench.training import TrainingTask

from . import data as mnist
from .model import ACTIVATIONS

# CPU-sized defaults: `gradbench run --task mnist-vae -e gst` on the embedded subset (4,000
# training images, 40 steps an epoch) trains 2,000 steps and measures twice. On 2 cores a
# step costs ~25 ms (GR-MC with k = 100: ~180 ms); one measurement is the reference's
# 1,000 decoder passes over 1,000 images plus 100 estimates; one IWAE evaluation is
# 1,000 decoder passes. See docs/tasks/mnist-vae.md for measured times.
CPU_EPOCHS = 50
CPU_MEASURE_EVERY = 25
CPU_IWAE_SAMPLES = 1000
# Liu et al. 2023 (ReinMax), Table 2: the MNIST-VAE (categories K, latents L) grid.
REINMAX_GRID = ((8, 4), (4, 24), (8, 16), (16, 12), (64, 8), (10, 30), (32, 64))


@dataclass(frozen=True)
class _VAETask(TrainingTask):
    """Shared behaviour, parameters and CPU defaults of the two VAE tasks; subclasses set the latent kind,
    presets and the model's parameters."""

    latent: ClassVar[str]
    # The CPU-sized run both tasks share; presets and explicit parameters override it.
    DEFAULTS: ClassVar[dict[str, Any]] = {"dataset": "mnist", "binarize": "dynamic", "epochs": CPU_EPOCHS,
                                          "measure_every": CPU_MEASURE_EVERY, "iwae_every": CPU_MEASURE_EVERY}
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}  # named protocols: {preset: {parameter: value}}
    relaxed_f = True
    differentiable_f = True
    groups = ("encoder", "logits")
    offers = ("importance_weights",)
    dtype = "float32"
    default_samples = 100  # the GST variance protocol's 100 estimates
    default_reference_samples = 1000  # draws per measured image: decoder passes over the 1,000 images
    dataset: str | None = param(None, "mnist or fashion-mnist (default mnist)", kind="str", optional=True,
                                choices=mnist.DATASETS)
    data_dir: str | None = param(None, "folder with the IDX files (train-images-idx3-ubyte[.gz], ...; torchvision's "
                                       "MNIST/raw layout or flat); default: the embedded 5,000-image MNIST subset",
                                 kind="str", optional=True)
    binarize: str | None = param(None, "dynamic (a fresh Bernoulli draw per batch; evaluation on one fixed draw), "
                                       "static (one fixed draw) or none (grey-level targets, as the GST repository); "
                                       "default dynamic", kind="str", optional=True, choices=mnist.BINARIZE_MODES)
    epochs: int | None = param(None, f"training epochs (default {CPU_EPOCHS}; 0 with resume= only evaluates and "
                                     "measures)", kind="int", optional=True, ge=0)
    measure_every: int | None = param(None, "measure gradients every N epochs and at the last (default "
                                            f"{CPU_MEASURE_EVERY}; 0: never)", kind="int", optional=True, ge=0)
    measure_images: int = param(1000, "fixed test images the gradient is measured on (the GST protocol's 1,000)",
                                ge=1)
    iwae_samples: int = param(CPU_IWAE_SAMPLES, "samples per test image of the importance-weighted bound, logged "
                                                "as test/iwae_<k> (0: never computed)", ge=0)
    iwae_every: int | None = param(None, "compute the IWAE bound every N epochs and at the last (default "
                                         f"{CPU_MEASURE_EVERY}; 1: every epoch)", kind="int", optional=True, ge=1)
    checkpoint_every: int = param(0, "save a checkpoint every N epochs and at the last (0: never), in "
                                     "<run folder>/_checkpoints/", ge=0)
    resume: str | None = param(None, "checkpoint (.pt) to start from: continue training, or with epochs=0 "
                                     "re-measure at it", kind="str", optional=True)
    moving_variance: float = param(0.0, "decay d of the DisARM/RODEO/Double-CV moving-average variance of the "
                                         "encoder gradient over training steps (their 0.999), logged every epoch "
                                         "as train/encoder_moving_variance (zero-started, as the papers) and "
                                         "train/encoder_moving_variance_debiased (÷ 1 − dⁿ); 0: not recorded",
                                   ge=0.0, lt=1.0)

    def __post_init__(self):
        chosen = self.PRESETS.get(getattr(self, "preset", None), {})
        for key, default in self.DEFAULTS.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, chosen.get(key, default))
        if self.decoder_hidden is None:
            object.__setattr__(self, "decoder_hidden", tuple(reversed(self.encoder_hidden)))
        self._check_data()
        if self.resume is not None:
            from .checkpoint import load

            load(self.resume, self.architecture())
        elif self.epochs == 0:
            raise SpecError(f"{self.name}: epochs=0 needs resume=PATH (a checkpoint to evaluate and measure)")

    def _check_data(self) -> None:
        """Load the data now (cached in-process) so missing or corrupt files fail before the run starts."""
        data = mnist.load(self.dataset, self.data_dir)
        if self.measure_every and self.measure_images > data.test_images.shape[0]:
            raise SpecError(f"{self.name}: measure_images={self.measure_images} but the {data.name} test set has "
                            f"{data.test_images.shape[0]} images; use at most that many")

    def architecture(self) -> dict[str, Any]:
        """The parameters that fix the model's shape (checked when loading a checkpoint)."""
        return {"latent": self.latent, "latents": self.latents, "categories": self.categories,
                "encoder_hidden": list(self.encoder_hidden), "decoder_hidden": list(self.decoder_hidden),
                "activation": self.activation}

    def train(self, estimator, session) -> None:
        from .train import train

        train(self, estimator, session)


@tasks.register
@dataclass(frozen=True)
class MnistVAE(_VAETask):
    """Categorical VAE on MNIST (GST protocol, 30 × 10 latents) trained with the estimator, gradients measured."""

    name = "mnist-vae"
    latent = "categorical"
    families = ("categorical",)
    DEFAULTS = {**_VAETask.DEFAULTS, "latents": 30, "categories": 10}
    PRESETS = {
        # Fan et al. 2022 (GST), MNIST-VAE: 40 epochs, grey-level targets, a measurement after
        # every epoch. τ ∈ {1.0, 0.5} is the estimator's (e.g. "gst(gap=1.2, tau=0.5)");
        # the paper's 10 seeds are --seed 0 … 9. Meant for full MNIST (data_dir=) on a GPU.
        "gst-paper": {"epochs": 40, "binarize": "none", "measure_every": 1, "iwae_every": 1},
        # Liu et al. 2023 (ReinMax), MNIST-VAE grid: the GST code's model and grey-level targets
        # at (categories × latents) 8×4 … 32×64. The encoder gradient is exact by enumeration
        # where K^L ≤ 2^14 per image (only 8×4: 4,096 configurations); elsewhere the reference
        # is REINFORCE-LOO. Epochs and measurement stay the task's (or the caller's).
        **{f"reinmax-{k}x{n}": {"categories": k, "latents": n, "binarize": "none"}
           for k, n in REINMAX_GRID},
    }
    preset: str | None = param(None, "protocol preset: gst-paper, or reinmax-KxL for the ReinMax paper's grid "
                                     f"({', '.join(f'{k}x{n}' for k, n in REINMAX_GRID)}; K categories × L "
                                     "latents, grey-level targets); explicit parameters override it",
                               kind="str", optional=True, choices=("gst-paper", *(f"reinmax-{k}x{n}"
                                                                                  for k, n in REINMAX_GRID)))
    latents: int | None = param(None, "number of categorical latent variables L (default 30)", kind="int",
                                optional=True, ge=1)
    categories: int | None = param(None, "categories K per latent variable (default 10)", kind="int",
                                   optional=True, ge=2)
    encoder_hidden: tuple = param((512, 256), "hidden widths of the encoder MLP", kind="ints", ge=1)
    decoder_hidden: tuple | None = param(None, "hidden widths of the decoder MLP (default: the encoder's reversed)",
                                         kind="ints", optional=True, ge=1)
    activation: str = param("relu", "hidden activation: relu, or leaky_relu (slope 0.3)", choices=ACTIVATIONS)
    batch_size: int = param(100, "training batch size", ge=1)
    lr: float = param(1e-3, "Adam learning rate", gt=0.0)


@tasks.register
@dataclass(frozen=True)
class MnistVAEBinary(_VAETask):
    """Binary VAE on MNIST (DisARM protocol, 200 Bernoulli latents) trained with the estimator, gradients measured."""

    name = "mnist-vae-binary"
    latent = "bernoulli"
    families = ("bernoulli", "categorical")
    # DisARM's models (Dong, Mnih & Tucker 2020; batch 50, Adam 1e-4): "linear" is the default
    # with lr=1e-4; "nonlinear" adds encoder_hidden=[200, 200] (LeakyReLU 0.3, decoder mirrored).
    DEFAULTS = {**_VAETask.DEFAULTS, "batch_size": 50, "lr": 1e-3}
    PRESETS = {
        # RODEO (Shi et al. 2022) and Double-CV (Titsias & Shi 2022): 200 Bernoulli latents, fixed
        # uniform prior (this task's only prior), batch 100, Adam 1e-3 on dynamically binarised
        # MNIST; Fashion-MNIST with Adam 3e-4 (needs data_dir=). K ∈ {2, 3} is the estimator's,
        # e.g. "rodeo(k=2)", "double-cv(k=3)".
        "rodeo": {"batch_size": 100, "lr": 1e-3, "binarize": "dynamic"},
        "rodeo-fashion": {"dataset": "fashion-mnist", "batch_size": 100, "lr": 3e-4, "binarize": "dynamic"},
    }
    preset: str | None = param(None, "protocol preset: rodeo (RODEO/Double-CV on MNIST: batch 100, lr 1e-3) or "
                                     "rodeo-fashion (Fashion-MNIST, lr 3e-4; needs data_dir=); explicit parameters "
                                     "override it", kind="str", optional=True, choices=("rodeo", "rodeo-fashion"))
    latents: int = param(200, "number of Bernoulli latent variables", ge=1)
    encoder_hidden: tuple = param((), "hidden widths of the encoder MLP (none: linear, as DisARM's linear model; "
                                      "[200, 200]: DisARM's nonlinear one)", kind="ints", ge=1)
    decoder_hidden: tuple | None = param(None, "hidden widths of the decoder MLP (default: the encoder's reversed)",
                                         kind="ints", optional=True, ge=1)
    activation: str = param("leaky_relu", "hidden activation: leaky_relu (slope 0.3, as DisARM) or relu",
                            choices=ACTIVATIONS)
    batch_size: int | None = param(None, "training batch size (default 50, as DisARM)", kind="int", optional=True,
                                   ge=1)
    lr: float | None = param(None, "Adam learning rate (default 1e-3 for a CPU-sized run; DisARM used 1e-4 for 10⁶ "
                                   "steps)", kind="float", optional=True, gt=0.0)

    @property
    def categories(self) -> int:
        return 1
