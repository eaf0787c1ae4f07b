"""The parts the Train dock widget is made of: pairs, model choice, options, live view, saving."""
