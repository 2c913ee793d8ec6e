# Installs a systemd unit from scripts/ with ExecStart pointing at the installed programs: run at
# install time (CMakeLists.txt), so `cmake --install --prefix P` and cpack (prefix /usr) both get
# the right path. In: UNIT_SRC, UNIT_DIR (under the prefix), BIN_DIR (under the prefix).
file(READ "${UNIT_SRC}" text)
string(REPLACE "/usr/local/bin/" "${CMAKE_INSTALL_PREFIX}/${BIN_DIR}/" text "${text}")
get_filename_component(name "${UNIT_SRC}" NAME)
set(dest "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}/${UNIT_DIR}")
file(MAKE_DIRECTORY "${dest}")
file(WRITE "${dest}/${name}" "${text}")
message(STATUS "Installing: ${dest}/${name}")
