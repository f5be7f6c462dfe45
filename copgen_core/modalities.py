"""The COP-GEN modality registry.

Twelve modalities, each with its native grid, channel order, VAE latent shape and token layout. The
canonical order is the alphabetical order of the keys (the official configs iterate an
``ml_collections.ConfigDict``, which sorts keys), and every list in the backbone follows it:
patch embeddings, decoder heads, time tokens and token blocks. A checkpoint trained on another order
does not load, so never re-order :data:`MODALITIES`.

Every image modality covers the same 1920 m x 1920 m footprint at its own native ground sampling
distance: 192 px at 10 m, 96 px at 20 m, 32 px at 60 m and 64 px at 30 m (DEM). The VAEs downsample
by 8, so latents are 24/12/4/8 px with 8 channels; the backbone patchifies them with patch size 2.
Scalar modalities (location, date) are 3-vectors diffused as raw values with 3 tokens each.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

FOOTPRINT_M = 1920.0
"""Side of every image modality's footprint, in metres."""

VAE_DOWNSAMPLE = 8
LATENT_CHANNELS = 8


class Kind(StrEnum):
    """What a modality's values are, which decides its normalisation."""

    S2 = "s2"  # Sentinel-2 reflectance DN (x10000)
    S1 = "s1"  # Sentinel-1 RTC gamma0, linear power
    DEM = "dem"  # elevation in metres
    LULC = "lulc"  # Esri/IO land-cover class codes
    CLOUD = "cloud"  # 4-class cloud mask codes (clear, thick, thin, shadow)
    LATLON = "latlon"  # location on the unit sphere
    DATE = "date"  # day of year and year


@dataclass(frozen=True)
class Modality:
    """One COP-GEN modality.

    Attributes
    ----------
    key:
        Official key, e.g. ``"S2L2A_B02_B03_B04_B08"``; also the checkpoint/config name.
    kind:
        Value type, see :class:`Kind`.
    channels:
        Channel names in the order fed to the VAE (not sorted: S2 10 m is B04, B03, B02, B08).
    gsd_m:
        Native ground sampling distance in metres; ``None`` for scalars.
    collection:
        The STAC collection (Planetary Computer naming) this modality is read from, if any.
    scale_factor:
        Latent scale factor of the official VAE (``z_used = scale * z``); 1.0 for scalars.
    vae_name:
        Folder name of the official VAE checkpoint (``models/vae/<name>/model-50-ema.pth``).
    """

    key: str
    kind: Kind
    channels: tuple[str, ...]
    gsd_m: float | None
    collection: str | None
    scale_factor: float
    vae_name: str | None = None

    @property
    def is_image(self) -> bool:
        return self.gsd_m is not None

    @property
    def is_scalar(self) -> bool:
        return self.gsd_m is None

    @property
    def pixel_size(self) -> int:
        """Pixels per side of the 1920 m footprint (192/96/32/64); 1 for scalars."""
        if self.gsd_m is None:
            return 1
        return int(round(FOOTPRINT_M / self.gsd_m))

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the VAE input: one plane per class for one-hot kinds; (1, 1, 3) for scalars."""
        if self.is_scalar:
            return (1, 1, 3)
        return (self.vae_channels, self.pixel_size, self.pixel_size)

    @property
    def vae_channels(self) -> int:
        """Channels the VAE sees: LULC is 10 one-hot planes, the cloud mask 4."""
        if self.kind is Kind.LULC:
            return 10
        if self.kind is Kind.CLOUD:
            return 4
        return len(self.channels)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) the backbone sees: (8, px/8, px/8) for images, (1, 1, 3) for scalars."""
        if self.is_scalar:
            return (1, 1, 3)
        side = self.pixel_size // VAE_DOWNSAMPLE
        return (LATENT_CHANNELS, side, side)

    @property
    def patch_size(self) -> int:
        return 1 if self.is_scalar else 2

    @property
    def num_tokens(self) -> int:
        c, h, w = self.latent_shape
        p = self.patch_size
        return (h // p) * (w // p)

    @property
    def latent_numel(self) -> int:
        c, h, w = self.latent_shape
        return c * h * w


_S2_10 = ("B04", "B03", "B02", "B08")
_S2_20 = ("B05", "B06", "B07", "B8A", "B11", "B12")

MODALITIES: tuple[Modality, ...] = (
    Modality("3d_cartesian_lat_lon", Kind.LATLON, ("x", "y", "z"), None, None, 1.0),
    Modality("DEM_DEM", Kind.DEM, ("DEM",), 30.0, "cop-dem-glo-30", 0.404247, "DEM_64x64_DEM"),
    Modality("LULC_LULC", Kind.LULC, ("LULC",), 10.0, "io-lulc-annual-v02", 0.464794, "LULC_192x192_LULC"),
    Modality("S1RTC_vh_vv", Kind.S1, ("vv", "vh"), 10.0, "sentinel-1-rtc", 0.633804, "S1RTC_192x192_VV_VH"),
    Modality("S2L1C_B01_B09_B10", Kind.S2, ("B01", "B09", "B10"), 60.0, "sentinel-2-l1c", 0.565812,
             "S2L1C_32x32_B1_9_10"),
    Modality("S2L1C_B02_B03_B04_B08", Kind.S2, _S2_10, 10.0, "sentinel-2-l1c", 0.772514,
             "S2L1C_192x192_B4_3_2_8"),
    Modality("S2L1C_B05_B06_B07_B11_B12_B8A", Kind.S2, _S2_20, 20.0, "sentinel-2-l1c", 0.765817,
             "S2L1C_96x96_B5_6_7_8A_11_12"),
    Modality("S2L1C_cloud_mask", Kind.CLOUD, ("cloud_mask",), 10.0, "sentinel-2-l1c", 0.557045,
             "S2L1C_192x192_cloud_mask"),
    Modality("S2L2A_B01_B09", Kind.S2, ("B01", "B09"), 60.0, "sentinel-2-l2a", 0.571367, "S2L2A_32x32_B1_9"),
    Modality("S2L2A_B02_B03_B04_B08", Kind.S2, _S2_10, 10.0, "sentinel-2-l2a", 0.853416,
             "S2L2A_192x192_B4_3_2_8"),
    Modality("S2L2A_B05_B06_B07_B11_B12_B8A", Kind.S2, _S2_20, 20.0, "sentinel-2-l2a", 0.567267,
             "S2L2A_96x96_B5_6_7_8A_11_12"),
    Modality("mean_timestamps", Kind.DATE, ("sin_doy", "cos_doy", "year_norm"), None, None, 1.0),
)
"""All 12 official modalities in canonical (alphabetical) order."""

BY_KEY: dict[str, Modality] = {m.key: m for m in MODALITIES}
KEYS: tuple[str, ...] = tuple(m.key for m in MODALITIES)

ALIASES: dict[str, str] = {
    "latlon": "3d_cartesian_lat_lon",
    "lat_lon": "3d_cartesian_lat_lon",
    "coords": "3d_cartesian_lat_lon",
    "dem": "DEM_DEM",
    "lulc": "LULC_LULC",
    "s1": "S1RTC_vh_vv",
    "s1rtc": "S1RTC_vh_vv",
    "s2l1c_60m": "S2L1C_B01_B09_B10",
    "s2l1c_10m": "S2L1C_B02_B03_B04_B08",
    "s2l1c_20m": "S2L1C_B05_B06_B07_B11_B12_B8A",
    "cloud_mask": "S2L1C_cloud_mask",
    "s2l2a_60m": "S2L2A_B01_B09",
    "s2l2a_10m": "S2L2A_B02_B03_B04_B08",
    "s2l2a_20m": "S2L2A_B05_B06_B07_B11_B12_B8A",
    "date": "mean_timestamps",
    "timestamps": "mean_timestamps",
}
"""Short names accepted by the CLI and configs."""


def resolve(name: str) -> Modality:
    """Return the modality for an official key or a short alias (case-insensitive for aliases).

    Raises
    ------
    KeyError
        If the name is unknown; the message lists the valid keys and aliases.
    """
    if name in BY_KEY:
        return BY_KEY[name]
    alias = ALIASES.get(name.lower())
    if alias is not None:
        return BY_KEY[alias]
    raise KeyError(
        f"unknown modality {name!r}; use one of the official keys {list(KEYS)} "
        f"or the aliases {sorted(ALIASES)}"
    )


def canonical(names: Iterable[str]) -> tuple[Modality, ...]:
    """Resolve names and return them de-duplicated in canonical (alphabetical key) order."""
    keys = {resolve(n).key for n in names}
    return tuple(m for m in MODALITIES if m.key in keys)


def patch_size_for(modality: Modality, max_grid: int = 0) -> int:
    """Patch size of ``modality``'s latent in a backbone whose token lattices are at most ``max_grid`` per side.

    ``max_grid = 0`` is the official architecture: patch 2 for every image latent, 1 for scalars.
    Otherwise the patch doubles (from 2) while the lattice is wider than ``max_grid`` and the latent
    divides evenly: with 6, the 24-latent 10 m modalities get patch 4 and share the 6 x 6 lattice of
    the 20 m ones (12-latent, patch 2), so their tokens sit over the same ground.
    """
    if modality.is_scalar:
        return 1
    side, patch = modality.latent_shape[1], 2
    while max_grid and side // patch > max_grid and side % (2 * patch) == 0:
        patch *= 2
    return patch


@dataclass(frozen=True)
class TokenLayout:
    """Where each modality's tokens sit in the backbone's sequence.

    The sequence is ``[one time token per modality] + [patch tokens of modality 0..n-1]``; modality
    ``m`` has ``(side / p)**2`` patch tokens for its latent side and patch size ``p``
    (:func:`patch_size_for` with :attr:`max_grid`).
    """

    modalities: tuple[Modality, ...]
    max_grid: int = 0

    @property
    def num_time_tokens(self) -> int:
        return len(self.modalities)

    def patch_size(self, modality: Modality) -> int:
        """Patch size of one of this layout's modalities."""
        return patch_size_for(modality, self.max_grid)

    def grid(self, modality: Modality) -> int:
        """Tokens per side of ``modality``'s lattice (1 for scalars, which have 3 tokens in a row)."""
        return 1 if modality.is_scalar else modality.latent_shape[1] // self.patch_size(modality)

    def tokens(self, modality: Modality) -> int:
        """Patch tokens of ``modality``."""
        c, h, w = modality.latent_shape
        p = self.patch_size(modality)
        return (h // p) * (w // p)

    @property
    def num_tokens(self) -> int:
        return self.num_time_tokens + sum(self.tokens(m) for m in self.modalities)

    def spans(self) -> dict[str, tuple[int, int]]:
        """Token (start, end) of each modality's patch tokens, in sequence indices."""
        out: dict[str, tuple[int, int]] = {}
        pos = self.num_time_tokens
        for m in self.modalities:
            out[m.key] = (pos, pos + self.tokens(m))
            pos += self.tokens(m)
        return out


def layout(names: Sequence[str] | None = None, max_grid: int = 0) -> TokenLayout:
    """Token layout for a model over ``names`` (all 12 when None), in canonical order (see :class:`TokenLayout`)."""
    return TokenLayout(MODALITIES if names is None else canonical(names), max_grid)
