"""The alerts package's exception family (STYLE 8): everything raised out of ``alerts/`` is an
``AlertsError``; callers catch that one class at their boundary."""

from __future__ import annotations


class AlertsError(Exception):
    """Base of every error raised by the alerts package."""


class RuleError(AlertsError):
    """A rule file (or an expression in it) is invalid. ``str()`` starts with ``file:line:col``."""

    def __init__(self, message: str, file: str = "", line: int = 0, col: int = 0) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        super().__init__(self._render())

    def _render(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line or None, self.col or None) if p)
        return f"{where}: {self.message}" if where else self.message


class RuleErrors(RuleError):
    """Every error found in one rule file (``fleetmon rules check`` prints them all, as promtool
    does); ``str()`` is one ``file:line:col: message`` line per error."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, first.file, first.line, first.col)

    def _render(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class ParseError(AlertsError):
    """An expression (PromQL subset) or template could not be parsed; ``pos`` is a 0-based offset
    into the source text, turned into file:line:col by the rule-file loader."""

    def __init__(self, message: str, pos: int = 0) -> None:
        self.message = message
        self.pos = pos
        super().__init__(message)


class EvalError(AlertsError):
    """Evaluation failed at run time (e.g. many-to-many matching, like Prometheus)."""


class TemplateError(AlertsError):
    """A label/annotation template failed to parse or expand."""


class UnitTestError(AlertsError):
    """A promtool-format rule unit-test file is invalid."""


class NotifierError(AlertsError):
    """A notifier's configuration is invalid or it failed to start."""
