"""sloserve.metrics"""
