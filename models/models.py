"""The model registry: names in YAML specs map to constructors.

Same API as the original LIIF code, so researchers' code keeps working::

    @models.register('my-encoder')
    class MyEncoder(nn.Module): ...

    model = models.make({'name': 'liif', 'args': {...}})
    model = models.make(checkpoint['model'], load_sd=True)

A spec is ``{'name': str, 'args': dict}`` (``args`` may be omitted); ``make`` checks
the args against the constructor's signature so a typo in a config fails with the
list of valid arguments instead of a TypeError deep inside a constructor.
"""
from utils.errors import UserError
from utils.registry import Registry

_registry = Registry('model')
models = _registry.entries  # name -> constructor, as in the original code


def register(name):
    """Decorator registering a model class or factory function under ``name``."""
    return _registry.register(name)


def make(model_spec, args=None, load_sd=False):
    """Build a model from ``{'name', 'args'[, 'sd']}``.

    ``args`` (optional dict) overrides/extends ``model_spec['args']``; with
    ``load_sd`` the state dict ``model_spec['sd']`` is loaded strictly.
    """
    model = _registry.build(model_spec, args)
    if load_sd:
        model.load_state_dict(model_spec['sd'])
    return model


class QueryPaths:
    """Mixin of models with a readable specification query and a fast one (LIIF, LTE):
    ``model.query_impl`` is ``'fast'`` (the default) or ``'plain'``, checked on
    assignment against ``QUERY_IMPLS``. A runtime setting, not a constructor argument,
    so checkpoints stay in the published format."""

    QUERY_IMPLS = ('fast', 'plain')

    @property
    def query_impl(self):
        """Which query path runs: ``'fast'`` or ``'plain'`` (see ``QUERY_IMPLS``)."""
        return getattr(self, '_query_impl', self.QUERY_IMPLS[0])

    @query_impl.setter
    def query_impl(self, impl):
        if impl not in self.QUERY_IMPLS:
            raise UserError(f'query implementation must be one of {", ".join(self.QUERY_IMPLS)}, '
                            f'got {impl!r}')
        self._query_impl = impl


def set_query_impl(model, impl):
    """Select the query path (``'fast'``/``'plain'``, a script's ``--query``) of a model
    that has one (``query_impl`` and ``QUERY_IMPLS``, e.g. LIIF).

    ``impl=None`` keeps the model's default. Returns ``False`` when the model has no
    such setting (nothing changed), ``True`` otherwise; raises ``UserError`` for a path
    the model does not offer.
    """
    if impl is None:
        return True
    if not hasattr(model, 'query_impl'):
        return False
    valid = getattr(model, 'QUERY_IMPLS', (model.query_impl,))
    if impl not in valid:
        raise UserError(f'--query {impl}: this model offers {", ".join(valid)}')
    model.query_impl = impl
    return True
