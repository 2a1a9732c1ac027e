"""Checkout. So far only the price preview; orders themselves are still to come."""
