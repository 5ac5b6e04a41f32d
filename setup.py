"""The optional compiled reader (daemon/runwatch/sources/_wandblog.c).

Everything else is in pyproject.toml. ``optional=True``: where no compiler (or no zlib
header) is at hand the build skips the module and runwatch reads logs in pure Python,
with the same results, more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "runwatch.sources._wandblog",
            ["daemon/runwatch/sources/_wandblog.c"],
            libraries=["z"],
            optional=True,
        )
    ]
)
