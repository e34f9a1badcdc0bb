import functools

from seqlab._callables import is_async_callable


async def coro_fn(x):
    return x


def plain(x):
    return x


class AsyncCall:
    async def __call__(self):
        pass


def test_async_callables_behind_partials_decorators_and_call():
    @functools.wraps(coro_fn)
    def decorated(*args):
        return coro_fn(*args)

    assert is_async_callable(coro_fn)
    assert is_async_callable(functools.partial(coro_fn, 1))
    assert is_async_callable(decorated)
    assert is_async_callable(functools.partial(decorated, 1))
    assert is_async_callable(AsyncCall())


def test_plain_callables_are_not_async():
    assert not is_async_callable(plain)
    assert not is_async_callable(functools.partial(plain, 1))
    assert not is_async_callable(functools.wraps(plain)(lambda *a: plain(*a)))
    assert not is_async_callable(len)
