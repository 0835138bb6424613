"""sloserve.frontend"""
