"""Artifact contracts: every on-disk format acar reads or writes is defined here, once.

See ``docs/artifacts.md`` for the prose version.  Stages import these modules and
never parse another stage's files by hand.
"""


class ArtifactError(ValueError):
    """Bad input artifact.  ``str(err)`` is one line that names the file and the problem."""

    def __init__(self, path: object, problem: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path, self.problem, self.line = path, problem, line
