"""sloserve.routing"""
