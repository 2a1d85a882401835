"""A GAN: a LightningModule with manual optimization, trained by torchcallbacks' Trainer.

    python examples/gan.py [--device cuda] [--epochs 40] [--out runs/gan]

Needs Lightning (``pip install "torchcallbacks[integrations]"``). The module sets
``self.automatic_optimization = False`` and drives its two optimizers in ``training_step``
as Lightning's docs show: ``self.optimizers()``, ``self.toggle_optimizer``,
``self.manual_backward``, ``self.clip_gradients``, and ``self.lr_schedulers()`` stepped in
``on_train_epoch_end``. The generator learns to turn noise into samples of a 2-D Gaussian
centred on (2, -1); the script prints how far the generated samples' mean is from the real
one before and after training, writes ``log.csv`` (both losses per epoch) and plots them.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from _common import arguments, save_plot
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchcallbacks import CSVLogger, Trainer, seed_everything

CENTRE = torch.tensor([2.0, -1.0])


class GAN(L.LightningModule):
    def __init__(self, noise: int = 4, hidden: int = 32, lr: float = 2e-3) -> None:
        super().__init__()
        self.automatic_optimization = False  # training_step steps the optimizers itself
        self.noise, self.lr = noise, lr
        self.generator = nn.Sequential(
            nn.Linear(noise, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 2)
        )
        self.discriminator = nn.Sequential(
            nn.Linear(2, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def training_step(self, batch, batch_idx):
        (real,) = batch
        g_opt, d_opt = self.optimizers()
        fake = self(torch.randn(len(real), self.noise, device=real.device))
        ones = torch.ones(len(real), 1, device=real.device)

        self.toggle_optimizer(d_opt)  # only the discriminator's parameters need gradients
        d_loss = F.binary_cross_entropy_with_logits(self.discriminator(real), ones)
        d_loss += F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), 1 - ones)
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        self.clip_gradients(d_opt, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
        d_opt.step()
        self.untoggle_optimizer(d_opt)

        self.toggle_optimizer(g_opt)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()
        self.untoggle_optimizer(g_opt)
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss}, prog_bar=True, on_epoch=True)

    def on_train_epoch_end(self):
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def configure_optimizers(self):
        betas = (0.5, 0.999)
        g_opt = torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=betas)
        d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=betas)
        schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=20, gamma=0.5)
                      for o in (g_opt, d_opt)]  # fmt: skip
        return [g_opt, d_opt], schedulers


def distance_to_centre(model: GAN, samples: int = 2000) -> float:
    """How far the mean of generated samples is from the real distribution's centre."""
    with torch.no_grad():
        z = torch.randn(samples, model.noise, device=model.device)
        return float((model(z).mean(0).cpu() - CENTRE).norm())


def main() -> None:
    args = arguments(__doc__.splitlines()[0], out="gan", epochs=40)
    out = Path(args.out)
    generator = seed_everything(0)
    real = CENTRE + 0.5 * torch.randn(512 if args.small else 4096, 2, generator=generator)
    loader = DataLoader(TensorDataset(real), batch_size=64, shuffle=True, generator=generator)

    model = GAN()
    trainer = Trainer(model, device=args.device)  # two optimizers from configure_optimizers
    before = distance_to_centre(model)
    history = trainer.fit(loader, epochs=args.epochs, callbacks=[CSVLogger(out / "log.csv")])
    after = distance_to_centre(model)
    print(f"optimizer steps: {trainer.global_step} (two per batch)")
    print(f"distance of the generated mean to the real one: {before:.3f} -> {after:.3f}")
    save_plot(history, out / "curves.png")


if __name__ == "__main__":
    main()
