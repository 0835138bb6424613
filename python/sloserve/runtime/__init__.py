"""sloserve.runtime"""
