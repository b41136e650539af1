"""llamalab: look inside LLaMA-family models, probe them, and run the ChatGPT recipe on them.

Importing the package has no side effects; heavy libraries (torch, transformers, trl) are imported
by the submodules that need them.
"""

__version__ = "0.1.0"
