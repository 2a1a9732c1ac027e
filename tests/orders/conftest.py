from tests.wallet.fake_pay import fake_pay, fake_pay_server

__all__ = ["fake_pay", "fake_pay_server"]
