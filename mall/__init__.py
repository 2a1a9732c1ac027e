"""mall: backend for WeChat mini-program member malls."""

from mall.kit.masking import install_log_masking

__version__ = "0.1.0"

# every process that runs mall code (server, workers, CLI) masks phone numbers in its logs
install_log_masking()
