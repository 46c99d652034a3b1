"""credit_hooks"""
