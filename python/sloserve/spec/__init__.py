"""sloserve.spec"""
