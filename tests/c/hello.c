/* The smallest dynamically linked program, for the dynamic-program tests
 * (tests/tests/dynamic.rs); built with the interpreter of each test's choice. */
#include <stdio.h>

int main(int argc, char **argv)
{
    printf("hello from %s\n", argc > 0 ? argv[0] : "?");
    return 0;
}
