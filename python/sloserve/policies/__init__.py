"""sloserve.policies"""
