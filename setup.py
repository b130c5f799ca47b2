"""The one thing setup.cfg cannot declare: the optional C crop kernel (iqa_tune/_gather.c).

``optional=True``: where no C compiler (or no Python headers) is found, the build warns and goes on, and
iqa_tune.patches gathers crops with numpy instead (the same bytes, slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("iqa_tune._gather", ["iqa_tune/_gather.c"], optional=True)])
