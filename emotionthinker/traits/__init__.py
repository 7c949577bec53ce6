"""Speaker traits for the annotations: gender (a classifier the platform trains and registers)
and age group (a configurable hub model, else the explicit value 'unknown').

Submodules are imported on use: the gender classifier pulls in CTranslate2 and
scikit-learn, the age estimator transformers.
"""
