"""The one exception type chargen raises for anything a user can fix."""


class ChargenError(ValueError):
    """Bad input, a bad option or a bad file: the message is a complete one-line explanation."""


class OptionError(ChargenError):
    """An option value out of its range: the command line reports it as a usage error."""
