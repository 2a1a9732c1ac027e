from tests.wallet.fake_pay import fake_pay, fake_pay_server
from tests.wechat.fake import fake_wechat, fake_wechat_server

__all__ = ["fake_pay", "fake_pay_server", "fake_wechat", "fake_wechat_server"]
