"""Helpers for checking this package's fast paths: plain twins written from the definitions."""

from geminifusion.testing.plain import (
    PlainGeminiFusion,
    plain_fusion,
    plain_window_attention,
    swap_in_plain_fusion,
)

__all__ = ["PlainGeminiFusion", "plain_fusion", "plain_window_attention", "swap_in_plain_fusion"]
