# cmake -DSOURCE_DIR=<repo> -P layout_check.cmake: what common/, control/ and
# switchctl include keeps to the layout of docs/architecture.md. common/
# includes nothing of the other parts nor libbpf/libxdp; control/ only
# common/; switchctl only common/, control/, tools/cli/ (header-only, no
# project includes) and its own files. The link side
# is checked when cmake configures (top-level CMakeLists.txt). xsk/ includes
# nothing of switchd; switchd's rooms include downward only: core/ and host/
# neither each other nor dp/ and app/, dp/ not app/.
set(rules
  "common|^#include [<\"](bpf/|xdp/|loader/|switchd/|control/|tools/|tests/)"
  "control|^#include [<\"](bpf/|xdp/|loader/|switchd/|tools/|tests/)"
  "tools/switchctl|^#include [<\"](bpf/|xdp/|loader/|switchd/|tests/)"
  "xsk|^#include [<\"](switchd/|control/|tools/|tests/)"
  "switchd/core|^#include [<\"](switchd/host/|switchd/dp/|switchd/app/|xsk/)"
  "switchd/host|^#include [<\"](switchd/core/|switchd/dp/|switchd/app/|xsk/)"
  "switchd/dp|^#include [<\"]switchd/app/")
set(bad "")
foreach(rule IN LISTS rules)
  string(REPLACE "|" ";" parts "${rule}")
  list(POP_FRONT parts dir)
  list(JOIN parts "|" pattern)
  file(GLOB files ${SOURCE_DIR}/${dir}/*.h ${SOURCE_DIR}/${dir}/*.cpp)
  foreach(f IN LISTS files)
    file(STRINGS ${f} lines REGEX "${pattern}")
    foreach(l IN LISTS lines)
      list(APPEND bad "${f}: ${l}")
    endforeach()
  endforeach()
endforeach()
if(bad)
  list(JOIN bad "\n" text)
  message(FATAL_ERROR "includes across the layout (docs/architecture.md):\n${text}")
endif()
message(STATUS "layout: common/, control/, switchctl, xsk/ and switchd's rooms include only what they may")
