"""Tests of stylizer plugins, one module per method (mirrors nstzoo/stylizers/)."""
