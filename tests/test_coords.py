"""Coordinate helpers against hand-computed grids (spec section 1)."""
import torch

from utils.coords import latent_centres, make_cell, make_coord, to_pixel_samples


def test_make_coord_hand_computed_grid():
    coord = make_coord((2, 4), flatten=False)
    assert coord.shape == (2, 4, 2)
    # rows: -1 + (2i+1)/2 ; cols: -1 + (2j+1)/4
    assert torch.allclose(coord[:, 0, 0], torch.tensor([-0.5, 0.5]))
    assert torch.allclose(coord[0, :, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    # row coordinate constant along a row, column coordinate constant along a column
    assert torch.all(coord[1, :, 0] == 0.5) and torch.all(coord[:, 3, 1] == 0.75)


def test_make_coord_flatten_is_row_major():
    flat = make_coord((2, 3))
    assert flat.shape == (6, 2)
    expected = torch.tensor([[-0.5, -2 / 3], [-0.5, 0.0], [-0.5, 2 / 3],
                             [0.5, -2 / 3], [0.5, 0.0], [0.5, 2 / 3]])
    assert torch.allclose(flat, expected, atol=1e-7)


def test_make_coord_ranges():
    coord = make_coord((2, 2), ranges=[(0, 1), (-3, 1)], flatten=False)
    assert torch.allclose(coord[:, 0, 0], torch.tensor([0.25, 0.75]))
    assert torch.allclose(coord[0, :, 1], torch.tensor([-2.0, 0.0]))


def test_make_coord_device_and_dtype():
    coord = make_coord((3, 5), dtype=torch.float64)
    assert coord.dtype == torch.float64
    assert torch.allclose(coord[:, 1].reshape(3, 5)[0],
                          torch.tensor([-0.8, -0.4, 0.0, 0.4, 0.8], dtype=torch.float64))


def test_to_pixel_samples_pairs_each_pixel_with_its_centre():
    img = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)  # C=2, H=3, W=4
    coord, values = to_pixel_samples(img)
    assert coord.shape == (12, 2) and values.shape == (12, 2)
    for i in range(3):
        for j in range(4):
            k = i * 4 + j
            assert torch.allclose(coord[k], torch.tensor([-1 + (2 * i + 1) / 3,
                                                          -1 + (2 * j + 1) / 4]))
            assert torch.equal(values[k], img[:, i, j])


def test_make_cell():
    coord = torch.zeros(5, 7, 2)
    cell = make_cell(coord, (10, 40))
    assert cell.shape == coord.shape
    assert torch.all(cell[..., 0] == torch.tensor(2 / 10))
    assert torch.all(cell[..., 1] == torch.tensor(2 / 40))


def test_latent_centres_layout():
    centres = latent_centres(2, 3)
    assert centres.shape == (2, 2, 3)
    assert torch.allclose(centres[0, :, 0], torch.tensor([-0.5, 0.5]))
    assert torch.allclose(centres[1, 0], torch.tensor([-2 / 3, 0.0, 2 / 3]))
