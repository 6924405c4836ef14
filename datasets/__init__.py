"""Datasets and SR wrappers: the registry and every registered class (imported explicitly).

Also the image files' conventions (``image_io``), resizing and LR making (``resize``),
real-world degradations (``degrade``) and what every wrapper does to an item
(``sampling``)."""
from datasets.datasets import (PATH_ARGS, SECTION_KEYS, check_section, data_paths,  # noqa: F401
                               datasets, make, make_sr_dataset, register)
from datasets import degraded_wrappers, image_folder, wrappers  # noqa: F401  (registers classes)
from datasets.sampling import as_query_lists, seed_worker  # noqa: F401
from datasets.wrappers import item_file  # noqa: F401
