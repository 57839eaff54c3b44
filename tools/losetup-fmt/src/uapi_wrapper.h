/* Input of bindgen (see build.rs): the project's UAPI header, nothing else. */
#include <linux/loop_file_fmt.h>
