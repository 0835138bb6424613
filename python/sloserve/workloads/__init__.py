"""sloserve.workloads"""
