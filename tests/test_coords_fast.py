"""utils.coords.nearest_index: the cell grid_sample(mode='nearest', align_corners=False)
picks, found by arithmetic, including coordinates exactly on (or an ulp from) a cell
boundary, where the two ways grid_sample kernels round disagree."""
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.liif_fast import grid_sample_rounding_is_fused
from utils.coords import nearest_index

REPO = Path(__file__).resolve().parents[1]


def near_boundaries(size, dtype, ulps=8):
    """Every cell boundary of a ``size``-cell axis and its neighbours up to ``ulps``
    ulps away, plus -1 and 1, in ``dtype``."""
    exact = torch.arange(0, size + 1, dtype=torch.float64) * (2 / size) - 1
    centre = exact.to(dtype)
    values, up, down = [centre], centre, centre
    for _ in range(ulps):
        up = torch.nextafter(up, torch.full_like(up, 2))
        down = torch.nextafter(down, torch.full_like(down, -2))
        values += [up, down]
    return torch.cat(values).clamp(-1, 1)


def grid_sample_index(coord, size):
    """The cell grid_sample picks along the width axis; -1 where it reads padding."""
    # Map value k + 1 at cell k, so that 0 means zero padding.
    index_map = torch.arange(1, size + 1, dtype=coord.dtype).view(1, 1, 1, size)
    grid = torch.stack([coord, torch.zeros_like(coord)], dim=-1).view(1, 1, -1, 2)
    picked = F.grid_sample(index_map, grid, mode='nearest', align_corners=False)
    return picked.view(-1).long() - 1


def exact_index(coord, size, fused):
    """Reference in exact rational arithmetic: grid_sample's u = (x + 1) * size/2 - 0.5
    with x + 1 rounded to the dtype, then u rounded to the dtype once (fused) or after
    each operation, then to the nearest integer, half to even."""
    as_dtype = np.float32 if coord.dtype == torch.float32 else np.float64

    def rnd(value):  # exact rational -> nearest value of the dtype
        return Fraction(float(as_dtype(float(value))))

    out = []
    for x in coord.tolist():
        shifted = rnd(Fraction(x) + 1)
        product = shifted * Fraction(size, 2)
        u = rnd(product - Fraction(1, 2)) if fused else rnd(rnd(product) - Fraction(1, 2))
        out.append(round(u))  # Python rounds Fractions half to even
    return torch.tensor(out)


def test_hand_computed_cells_and_ties():
    # size 4: u = (x + 1) * 2 - 0.5 -> -0.5, 0.5, 1.5, 2.5, 3.5: ties go to the even cell
    coord = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    for fused in (True, False):
        assert nearest_index(coord, 4, fused).tolist() == [0, 0, 2, 2, 4]
    # cell centres of a 3-cell axis, and points inside cells
    assert nearest_index(torch.tensor([-2 / 3, 0.0, 2 / 3, -0.9, 0.9]), 3).tolist() == [0, 1, 2, 0, 2]
    # outside [-1, 1]: indices outside the grid
    assert nearest_index(torch.tensor([-1.7, 1.7]), 3).tolist() == [-2, 4]
    assert nearest_index(torch.zeros(2, 3), 5).shape == (2, 3)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('fused', [True, False])
def test_matches_exact_arithmetic_near_boundaries(dtype, fused):
    sizes = (3, 7, 48, 97) if dtype == torch.float32 else (3, 7, 48)
    for size in sizes:
        coord = near_boundaries(size, dtype, ulps=3)
        assert torch.equal(nearest_index(coord, size, fused), exact_index(coord, size, fused)), size


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_the_two_roundings_differ_on_some_ties(dtype):
    # Makes the grid_sample comparison below meaningful: a wrong rounding mode fails it.
    size = 97 if dtype == torch.float32 else 3
    coord = near_boundaries(size, dtype)
    assert (nearest_index(coord, size, True) != nearest_index(coord, size, False)).any()


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_matches_grid_sample_in_the_measured_rounding_mode(dtype):
    fused = grid_sample_rounding_is_fused(torch.device('cpu'), dtype)
    for size in list(range(1, 40)) + [48, 64, 97, 128, 194]:
        coord = near_boundaries(size, dtype)
        index = nearest_index(coord, size, fused)
        index[(index < 0) | (index >= size)] = -1
        assert torch.equal(index, grid_sample_index(coord, size)), size


CHILD = """
import torch
from models.liif_fast import grid_sample_rounding_is_fused
from tests.test_coords_fast import near_boundaries, grid_sample_index
from utils.coords import nearest_index
for dtype in (torch.float32, torch.float64):
    fused = grid_sample_rounding_is_fused(torch.device('cpu'), dtype)
    for size in (3, 48, 97, 194):
        coord = near_boundaries(size, dtype)
        index = nearest_index(coord, size, fused)
        index[(index < 0) | (index >= size)] = -1
        assert torch.equal(index, grid_sample_index(coord, size)), (dtype, size)
    print(dtype, fused)
"""


def test_matches_grid_sample_of_the_generic_cpu_kernel():
    # PyTorch's generic CPU kernel (no FMA) rounds differently from the AVX2/AVX-512
    # ones; ATEN_CPU_CAPABILITY selects it at start-up, hence a fresh process.
    env = {**os.environ, 'ATEN_CPU_CAPABILITY': 'default', 'PYTHONPATH': str(REPO)}
    result = subprocess.run([sys.executable, '-c', CHILD], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('torch.float') == 2
