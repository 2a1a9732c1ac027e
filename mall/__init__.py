"""mall: backend for WeChat mini-program member malls."""

__version__ = "0.1.0"
