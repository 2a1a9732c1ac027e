from tests.wechat.fake import fake_wechat, fake_wechat_server

__all__ = ["fake_wechat", "fake_wechat_server"]
