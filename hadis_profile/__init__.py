"""hadis-profile: the offline phase of query-aware diffusion serving.

Importing the package is cheap on purpose: serving stacks import
``hadis_profile.resolve`` on their hot path, so nothing here pulls in torch,
diffusers, transformers or pandas.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
