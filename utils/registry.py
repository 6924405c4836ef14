"""A small name -> constructor registry shared by ``models`` and ``datasets``."""
import inspect

from utils.errors import UserError


class RegistryError(UserError, KeyError):
    """Unknown or duplicate name, or arguments a constructor does not take."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


class Registry:
    def __init__(self, kind):
        self.kind = kind  # 'model' or 'dataset', used in messages
        self.entries = {}

    def register(self, name):
        def decorator(constructor):
            if name in self.entries:
                raise RegistryError(f'{self.kind} name {name!r} is registered twice '
                                    f'({self.entries[name].__module__} and {constructor.__module__})')
            self.entries[name] = constructor
            return constructor
        return decorator

    def names(self):
        return sorted(self.entries)

    def get(self, name):
        if name not in self.entries:
            raise RegistryError(f'unknown {self.kind} name {name!r}; registered: '
                                f'{", ".join(self.names())}')
        return self.entries[name]

    def build(self, spec, args=None):
        """Call the constructor named by ``spec['name']`` with ``spec['args']`` + ``args``."""
        if not hasattr(spec, 'get') or 'name' not in spec:
            raise RegistryError(f'a {self.kind} spec must be a mapping with a "name" key '
                                f'(and optional "args"), got {spec!r}')
        constructor = self.get(spec['name'])
        kwargs = dict(spec.get('args') or {})
        if args:
            kwargs.update(args)
        check_kwargs(constructor, kwargs, f'{self.kind} {spec["name"]!r}')
        return constructor(**kwargs)


def check_kwargs(constructor, kwargs, what):
    """Raise a one-line error if ``kwargs`` holds names ``constructor`` does not accept."""
    params = inspect.signature(constructor).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != 'self']
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise RegistryError(f'{what} got unknown argument(s) {", ".join(unknown)}; '
                            f'valid: {", ".join(valid)}')
    missing = [n for n in valid if params[n].default is params[n].empty and n not in kwargs]
    if missing:
        raise RegistryError(f'{what} is missing required argument(s) {", ".join(missing)}')
