"""sloserve.sglang"""
