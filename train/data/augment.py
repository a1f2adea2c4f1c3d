"""DomainBed's training augmentation, batched on tensors (CPU or GPU).

RandomResizedCrop(scale 0.7-1.0, ratio 3/4-4/3) + horizontal flip as one
``affine_grid``/``grid_sample`` per batch; ColorJitter(0.3, 0.3, 0.3, 0.3)
and RandomGrayscale(0.1) as per-sample tensor arithmetic. Doing it on whole
batches on the training device removes the per-image Python work that makes
a DataLoader the bottleneck of a small backbone. Hue jitter rotates the
chroma plane in YIQ space, a close and cheap stand-in for an HSV hue shift.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LUMA = (0.299, 0.587, 0.114)


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def random_resized_crop_flip(
    images: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.7, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
) -> torch.Tensor:
    """Crop a random area fraction/aspect of each image, resize back, flip half (float NCHW in, same size out)."""
    n, device = images.shape[0], images.device
    area = _uniform(n, *scale, generator, device)
    log_ratio = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator, device)
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(n, generator=generator, device=device) * 2 - 1) * (1 - width)
    cy = (torch.rand(n, generator=generator, device=device) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(n, generator=generator, device=device) < flip_p, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device, dtype=images.dtype)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = height
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def color_jitter(
    images: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.3,
    contrast: float = 0.3,
    saturation: float = 0.3,
    hue: float = 0.3,
    grayscale_p: float = 0.1,
) -> torch.Tensor:
    """Per-sample brightness, contrast, saturation, hue and random grayscale on [0, 1] RGB NCHW."""
    n, device = images.shape[0], images.device
    shape = (n, 1, 1, 1)
    x = images * _uniform(n, 1 - brightness, 1 + brightness, generator, device).view(shape)
    x = x.clamp(0, 1)
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    c = _uniform(n, 1 - contrast, 1 + contrast, generator, device).view(shape)
    x = (c * x + (1 - c) * mean).clamp(0, 1)
    s = _uniform(n, 1 - saturation, 1 + saturation, generator, device).view(shape)
    x = (s * x + (1 - s) * _gray(x)).clamp(0, 1)
    angle = _uniform(n, -hue, hue, generator, device) * 2 * math.pi
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    i = 0.596 * r - 0.274 * g - 0.322 * b
    q = 0.211 * r - 0.523 * g + 0.312 * b
    cos, sin = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
    i, q = i * cos - q * sin, i * sin + q * cos
    x = torch.stack(
        (y + 0.956 * i + 0.621 * q, y - 0.272 * i - 0.647 * q, y - 1.106 * i + 1.703 * q), dim=1
    ).clamp(0, 1)
    to_gray = (torch.rand(n, generator=generator, device=device) < grayscale_p).view(shape)
    return torch.where(to_gray, _gray(x).expand_as(x), x)


def domainbed_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The full DomainBed training augmentation on [0, 1] float RGB NCHW."""
    return color_jitter(random_resized_crop_flip(images, generator), generator)
