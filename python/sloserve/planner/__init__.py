"""sloserve.planner"""
