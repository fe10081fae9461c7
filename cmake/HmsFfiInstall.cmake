# What `cmake --install` puts where (docs/operations.md#installing), and the .deb packages CPack
# makes of it (`cpack -G DEB` in the build dir, or the `package` target):
#   hms-ffi      (component runtime) hms-ffid, hms-ffi, libhmsffi.so.1, libhmsffi++.so.0, the
#                .capnp schemas, the systemd units, the sysusers.d entry, the default configuration
#   hms-ffi-dev  (component dev) headers, the .so links, the CMake package (find_package(hmsffi)
#                -> hmsffi::client, hmsffi::c), hmsffi.pc and hmsffi++.pc, hms-ffi-bench
include(CMakePackageConfigHelpers)

set(HMS_FFI_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/hmsffi)
set(HMS_FFI_INSTALL_SCHEMADIR ${CMAKE_INSTALL_DATADIR}/hms-ffi/schemas)

install(EXPORT hmsffiTargets NAMESPACE hmsffi:: DESTINATION ${HMS_FFI_INSTALL_CMAKEDIR}
        COMPONENT dev)
configure_package_config_file(cmake/package/hmsffiConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/hmsffiConfig.cmake
  INSTALL_DESTINATION ${HMS_FFI_INSTALL_CMAKEDIR}
  PATH_VARS HMS_FFI_INSTALL_SCHEMADIR)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/hmsffiConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/hmsffiConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/hmsffiConfigVersion.cmake
        DESTINATION ${HMS_FFI_INSTALL_CMAKEDIR} COMPONENT dev)

# pkg-config files that find their prefix from where they are (${pcfiledir}), so that an
# install with --prefix, or the .deb's /usr, needs no rewriting.
file(RELATIVE_PATH HMS_FFI_PC_TO_PREFIX "${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig"
     "${CMAKE_INSTALL_PREFIX}")
string(REGEX REPLACE "/$" "" HMS_FFI_PC_TO_PREFIX "${HMS_FFI_PC_TO_PREFIX}")
foreach(pc hmsffi hmsffi++)
  configure_file(cmake/package/${pc}.pc.in ${CMAKE_CURRENT_BINARY_DIR}/${pc}.pc @ONLY)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/${pc}.pc
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
endforeach()

# The contracts components are built against, for `capnp compile -I` and hms_client_serve.
install(DIRECTORY schemas/hms DESTINATION ${HMS_FFI_INSTALL_SCHEMADIR} COMPONENT runtime
        FILES_MATCHING PATTERN "*.capnp"
        PATTERN "debate_breaking.capnp" EXCLUDE)  # a test's refused contract, not a contract
# systemd: the units and the system user. The default configuration is installed as a template;
# the package's postinst copies it to /etc/hms-ffi/hms-ffid.yaml when there is none (an install
# under a --prefix never writes /etc).
install(FILES deploy/systemd/hms-ffid.socket deploy/systemd/hms-ffid.service
              deploy/systemd/hms-ffi-gateway.service
        DESTINATION lib/systemd/system COMPONENT runtime)
install(FILES deploy/sysusers.d/hms-ffi.conf DESTINATION lib/sysusers.d COMPONENT runtime)
install(FILES deploy/hms-ffid.yaml DESTINATION ${CMAKE_INSTALL_DATADIR}/hms-ffi COMPONENT runtime)
install(FILES docs/operations.md docs/security.md docs/c-abi.md docs/architecture.md
              docs/gateway.md README.md
        DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/hms-ffi COMPONENT runtime)

# CPack: one .deb per component, with their Debian dependencies.
set(CPACK_PACKAGE_NAME hms-ffi)
set(CPACK_PACKAGE_VENDOR "HMS-FFI")
set(CPACK_PACKAGE_CONTACT "HMS-FFI maintainers <hms-ffi@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Shared-memory, zero-copy IPC broker for the components of one host")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_GENERATOR DEB)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME hms-ffi)
set(CPACK_DEBIAN_DEV_PACKAGE_NAME hms-ffi-dev)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION net)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# dpkg-shlibdeps works out hms-ffi's library dependencies from the binaries (libcapnp, libjwt,
# libsqlite3, libsystemd, libyaml-cpp, spdlog, fmt, OpenSSL).
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_DEPENDS "systemd")
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "hms-ffi (= ${PROJECT_VERSION}), libcapnp-dev, capnproto")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA ${CMAKE_CURRENT_SOURCE_DIR}/deploy/debian/postinst)
include(CPack)
