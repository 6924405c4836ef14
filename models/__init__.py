"""Models: the registry and every registered architecture (imported explicitly)."""
from models.models import make, models, register, set_query_impl  # noqa: F401

from models import edsr, rdn, rcan, swinir  # noqa: F401,E402  (encoders)
from models import mlp, lmmlp  # noqa: F401,E402
from models import liif, metasr, lte, ltep  # noqa: F401,E402
from models import lmliif, lmlte  # noqa: F401,E402  (LMF)
from models import lmciaosr  # noqa: F401,E402  (LMF's LM-CiaoSR)
from models import ciaosr, galerkin, srno  # noqa: F401,E402
from models import bicubic  # noqa: F401,E402  (the "Bicubic" baseline)
