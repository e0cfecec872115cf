"""The one exception type users see: a single line naming what is wrong and what is allowed."""


class HarnessError(Exception):
    """A user-facing error; its message is one line, printed without a traceback."""


def one_line(error: BaseException) -> str:
    """The message of any exception squeezed onto one line, prefixed by its type if not ours."""
    text = " ".join(str(error).split()) or repr(error)
    if isinstance(error, HarnessError):
        return text
    return f"{type(error).__name__}: {text}"
