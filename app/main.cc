#include "app/app.h"

int main(int argc, char** argv) { return parley::app::RunMain(argc, argv); }
